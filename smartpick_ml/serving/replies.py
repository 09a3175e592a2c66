"""What the scoring server answers a bad request: a 4xx whose message names the field, never a
stack trace, never the request's values at length.

MLflow's scoring server (``mlflow.pyfunc.scoring_server``) answers 500 to a body it cannot read
(JSON nested deeper than Python's recursion limit, an integer longer than Python converts), adds
a stack trace to an error it did not expect, and puts the whole request frame in front of a
model's error message (``Failed to predict data '<frame>'``). :func:`guard_scoring_server`
wraps its scoring function in the server worker so that every failed request is answered by
:func:`reply_for`: HTTP 400 with a short message.
"""

from __future__ import annotations

import functools
import json
import logging
import traceback
from typing import Any

from smartpick_ml.contracts.columns import quote
from smartpick_ml.modelling.logged_model import PARAM_DEFAULTS

log = logging.getLogger(__name__)

#: the longest message a reply carries (our messages quote at most ~80 characters of a value)
MAX_REPLY_CHARS = 600
#: MLflow's prefix before a model's message, which quotes the whole request frame
_MLFLOW_ECHO = "Failed to predict data '"


def invalid_request(message: str) -> Exception:
    """The error the scoring server turns into HTTP 400 with ``message``; ``message`` is kept
    apart from what MLflow may prefix to it, so the reply says only it."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    exc = MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
    exc.client_message = message  # type: ignore[attr-defined]
    return exc


def _short(message: str) -> str:
    """MLflow's own message without the request it quotes: the error after an echoed frame, its
    first line (MLflow puts the raw input on the next ones), at most ``MAX_REPLY_CHARS``."""
    if message.startswith(_MLFLOW_ECHO) and "\nError: " in message:
        message = message.rsplit("\nError: ", 1)[1]
    first = message.strip().split("\n", 1)[0].strip()
    return first[:MAX_REPLY_CHARS] or "the request could not be scored"


def reply_for(exc: BaseException) -> Exception:
    """The 400 a request that raised ``exc`` is answered with."""
    from mlflow.exceptions import MlflowException

    ours = getattr(exc, "client_message", None)
    if isinstance(ours, str):
        return invalid_request(ours[:MAX_REPLY_CHARS])
    if isinstance(exc, RecursionError):
        return invalid_request("body: nested too deeply to read (send a flat dataframe_split)")
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return invalid_request("body: a number with too many digits to read")
    if isinstance(exc, MlflowException):
        return invalid_request(_short(exc.message))
    return invalid_request(f"the request could not be read or scored ({type(exc).__name__}); "
                           "send dataframe_split with the columns in docs/serving.md")


def refuse_unknown_params(body: Any) -> None:
    """Refuse a request whose ``params`` name one the model does not take: MLflow drops those
    with a warning in the server's log, and the client would never learn that its parameter
    did nothing. Only a body that mentions ``params`` is parsed again."""
    mentions = (b'"params"' in body if isinstance(body, bytes)
                else '"params"' in body if isinstance(body, str) else False)
    if not mentions:
        return
    try:
        params = json.loads(body).get("params")
    except (ValueError, RecursionError, AttributeError):  # MLflow's parser words these
        return
    if isinstance(params, dict):
        unknown = sorted(str(k) for k in params if k not in PARAM_DEFAULTS)
        if unknown:
            raise invalid_request(f"params.{quote(unknown[0], 40).strip(chr(39))}: unknown "
                                  f"parameter; known: {', '.join(PARAM_DEFAULTS)}")


def guard_scoring_server() -> bool:
    """Answer every failed request of this process's scoring server by :func:`reply_for`
    (once; True if it installed the guard now). The scoring function is looked up by name at
    each request, so wrapping it before the server starts covers every request."""
    from mlflow.pyfunc import scoring_server

    original = scoring_server.invocations
    if getattr(original, "guarded_by_smartpick", False):
        return False

    @functools.wraps(original)
    def invocations(*args: Any, **kwargs: Any) -> Any:
        try:
            refuse_unknown_params(args[0] if args else kwargs.get("data"))
            return original(*args, **kwargs)
        except Exception as exc:  # every failure of a request is the request's, answered 4xx
            if getattr(exc, "client_message", None) is None:
                # where it failed, without the message (which may quote the request)
                log.warning("request failed with %s at:\n%s", type(exc).__name__,
                            "".join(traceback.format_tb(exc.__traceback__)[-3:]))
            raise reply_for(exc) from None

    invocations.guarded_by_smartpick = True  # type: ignore[attr-defined]
    scoring_server.invocations = invocations
    return True
