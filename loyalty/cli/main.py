"""The `loyalty` program: its command groups, and exit codes instead of tracebacks."""

from __future__ import annotations

import sys

import click

from loyalty.cli import (
    accounts,
    dead_letters,
    operations,
    program,
    publish,
    rewards,
    rules,
    schema,
    serve,
    staff,
    webhooks,
)
from loyalty.cli.output import error_line
from loyalty.errors import (
    InvalidPayload,
    InvalidProgram,
    InvalidReward,
    InvalidRule,
    InvalidTier,
    LoyaltyError,
    NotMigratedError,
)
from loyalty.views import InvalidCursor


@click.group()
@click.version_option(package_name="loyalty-ledger")
def cli() -> None:
    """Loyalty-points ledger: events in, exact idempotent ledger out."""


for _command in (schema.db_group, serve.worker_command, serve.beat_command, publish.publish_group,
                 accounts.accounts_group, accounts.transactions_group, publish.adjust,
                 rules.rules_group, program.program_group, program.totals, program.verify,
                 program.events_group, program.pending_group,
                 program.tiers_group,
                 dead_letters.dlq_group, staff.earn, staff.redeem, staff.refund_transaction,
                 rewards.rewards_group, rewards.redemptions_group, webhooks.webhooks_group,
                 operations.health_command, operations.relay_command):
    cli.add_command(_command)
accounts.accounts_group.add_command(staff.accounts_create)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors and exit codes instead of tracebacks."""
    try:
        cli.main(args=argv, prog_name="loyalty", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `loyalty` or `loyalty dlq` alone: asking for help is not an error.
        click.echo(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli)))
        sys.exit(0)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        error_line(exc.format_message())
        sys.exit(2)
    except NotMigratedError as exc:
        error_line(str(exc))
        sys.exit(3)
    except (InvalidPayload, InvalidCursor, InvalidRule, InvalidReward,
            InvalidProgram, InvalidTier) as exc:
        error_line(str(exc))
        sys.exit(2)
    except LoyaltyError as exc:
        error_line(str(exc))
        sys.exit(1)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error_line(f"{type(exc).__name__}: {message}")
        sys.exit(1)
