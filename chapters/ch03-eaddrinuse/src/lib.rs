//! Chapter 3's library: a listening socket opened step by step, with the options that
//! decide who may bind a port ([`net`]).

pub mod net;
