"""What the bench scripts read from wrk's report (imported by their inline python)."""
import re


def failed_and_total(report):
    """wrk's failed requests (socket errors and non-2xx answers), and all it sent."""
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", report))
    non2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", report))
    total = int(re.search(r"(\d+) requests in", report).group(1))
    return errors + non2xx, total
