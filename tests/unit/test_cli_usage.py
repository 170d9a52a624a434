"""Usage errors of the `loyalty` program, in-process: no database, broker or subprocess.

The same `main` as the installed program, so the exit code and the one-line error are
the ones an operator sees; the errors that need a database stay in tests/e2e/test_cli.py.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from loyalty.cli import main


#: Usage errors that click or the command itself refuses before any database or broker
#: is touched: run in-process, through the same `main` and its exit codes.
@pytest.mark.parametrize(("args", "message"), [
    (["dlq", "show", str(2**63)], "LETTER_ID"),
    (["accounts", "get"], "exactly one of"),
    (["accounts", "list", "--limit", "0"], "--limit"),
    (["transactions", "list", "--contact-id", "x", "--type", "GIFT"], "--type"),
    (["adjust", "--contact-id", "x", "--amount", "1", "--balance", "2", "--description", "d",
      "--actor", "a"], "exactly one of"),
    (["no-such-command"], "No such command"),
    (["redeem", "--contact-id", "x", "--actor", "a"], "exactly one of --reward-id | --amount"),
    (["redeem", "--contact-id", "x", "--reward-id", "1", "--amount", "5", "--actor", "a"],
     "exactly one of --reward-id | --amount"),
    (["earn", "--amount", "5", "--activity", "a", "--actor", "a"], "exactly one of"),
    (["redemptions", "get"], "exactly one of --id | --code"),
    (["redemptions", "list"], "exactly one of --account-id | --contact-id"),
    (["rewards", "create", "--name", "x", "--kind", "gift", "--cost-in-points", "1"], "--kind"),
    (["rewards", "create", "--name", "x", "--kind", "discount_amount", "--value", "abc",
      "--currency", "USD", "--cost-in-points", "1"], "not a decimal"),
    (["transactions", "list", "--contact-id", "x", "--type", "REVERSAL"], "--type"),
    (["rules", "create", "--name", "n", "--trigger", "activity", "--kind", "fixed",
      "--points", "1"], "--activity"),
    (["publish", "refund", "--contact-id", "c", "--order-id", "o", "--refund-id", "r",
      "--currency", "USD"], "--amount"),
    (["webhooks", "add", "--url", "http://127.0.0.1:8000/x"], "loopback address"),
    (["webhooks", "add", "--url", "http://169.254.169.254/latest"], "link-local"),
    (["webhooks", "add", "--url", "https://example.com/x", "--secret", "whsec_short"], "--secret"),
    (["webhooks", "add", "--url", "https://example.com/x", "--event", "x.y"], "--event"),
    (["webhooks", "redeliver"], "exactly one of"),
])
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    with CliRunner().isolation() as (_out, err, *_):
        with pytest.raises(SystemExit) as exited:
            main(args)
        stderr = err.getvalue().decode()
    assert exited.value.code == 2, stderr
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
