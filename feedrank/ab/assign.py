"""A/B arm assignment: a user's arm is a pure function of the user id.

    arm_of("u00042", share=0.5, salt="feedrank-ab") -> "champion" | "challenger"

The user is in the challenger arm iff the first 15 hex digits of
``sha256(f"{salt}:{user_id}")``, read as a fraction of ``16**15``, are below
``share``.  Nothing is stored, so the arm is the same in every transformer
replica, across restarts and in offline analysis; a user never switches arm
while ``share`` and ``salt`` stay fixed.  Raising ``share`` only moves users
from champion to challenger (the fraction of a user does not depend on it);
a new ``salt`` reshuffles everybody (a fresh experiment).

The transformer (``serving.transformer``) assigns with this module; the
online simulator and the A/B coverage simulation predict its assignment with
the same function, and their command lines take the share with
:func:`add_share_argument`.
"""
from __future__ import annotations

import argparse
import hashlib

from feedrank.ab import ARMS, CHALLENGER_ARM, CHAMPION_ARM

__all__ = ["ARMS", "CHALLENGER", "CHAMPION", "DEFAULT_SALT", "DEFAULT_SHARE", "add_share_argument", "arm_of",
           "share_arg", "user_fraction"]

CHAMPION = CHAMPION_ARM
CHALLENGER = CHALLENGER_ARM
DEFAULT_SALT = "feedrank-ab"
DEFAULT_SHARE = 0.5
_SCALE = float(16 ** 15)


def user_fraction(user_id: str, salt: str = DEFAULT_SALT) -> float:
    """The user's stable position in [0, 1)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / _SCALE


def arm_of(user_id: str, share: float, salt: str = DEFAULT_SALT) -> str:
    """``"challenger"`` for the ``share`` of users below the cut, else ``"champion"``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"challenger share must be in [0, 1], got {share}")
    return CHALLENGER if user_fraction(user_id, salt) < share else CHAMPION


def share_arg(text: str) -> float:
    """An argparse type: a challenger share in [0, 1], with a clear message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_share_argument(parser: argparse.ArgumentParser,
                       help_text: str = "the challenger's share of the users, in [0, 1] (default %(default)s)"
                       ) -> None:
    """Adds ``--share`` (a float, default :data:`DEFAULT_SHARE`) to a command line that assigns arms."""
    parser.add_argument("--share", type=share_arg, default=DEFAULT_SHARE, help=help_text)
