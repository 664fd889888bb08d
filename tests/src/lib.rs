//! The harness: see the helpers below.
