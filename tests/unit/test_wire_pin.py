"""addons/wire.py works on mitmproxy's connection internals. Its behaviour is
proven by test_early_rejection.py and the cut tests in test_upload_spec.py
against this exact version; a new mitmproxy must be proven again first."""

from mitmproxy.version import VERSION

from policy.config import load  # noqa: F401  (policy must import without mitmproxy patches)

def test_mitmproxy_is_the_version_wire_py_was_proven_against():
    assert VERSION == "12.3.1", (
        "mitmproxy changed: re-run tests/stack/test_early_rejection.py and the cut tests "
        "(test_413_chunked..., test_500_empty_chunked...) many times, then update this pin")

def test_policy_never_imports_mitmproxy():
    import subprocess
    import sys
    code = ("import sys, policy.gate, policy.refusal, policy.routes; "
            "sys.exit(any(m == 'mitmproxy' or m.startswith('mitmproxy.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
