"""What the HTTP API accepts and answers: the request bodies, one prediction, and one message for
a body that fails validation.

The limits (texts per request, characters per text) come from the settings: the gate validates
every body against ``request_model(settings)`` before BentoML sees it, so a bad request is refused
alone and never joins a batch. BentoML's own ``input_spec`` is ``TextsRequest``/``ExplainRequest``
below, which check the shape only and publish the served settings' limits at /docs.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from core.tasks import TASKS
from service.errors import ErrorType, ServiceError
from service.settings import ServiceSettings


class Prediction(BaseModel):
    label: str = Field(description="The most probable class.")
    score: float = Field(description="Its probability.")
    scores: dict[str, float] = Field(description="Every class's probability; they sum to 1.")


# The media type stated, so BentoML does not derive it from the output's JSON schema on every
# response (13% of the per-request CPU, measured: docs/benchmarks.md).
Predictions = Annotated[list[Prediction], ContentType("application/json")]


def _texts_schema(settings: ServiceSettings) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "string", "minLength": 1}
    if settings.overlong == "refuse":
        item["maxLength"] = settings.max_chars_per_text
    return {"minItems": 1, "maxItems": settings.max_texts_per_request, "items": item}


def _texts_description(settings: ServiceSettings) -> str:
    over_long = "refused" if settings.overlong == "refuse" else "truncated to the limit"
    return (f"1 to {settings.max_texts_per_request} non-empty texts; texts over "
            f"{settings.max_chars_per_text} characters are {over_long}.")


def request_model(settings: ServiceSettings) -> type[BaseModel]:
    """The body of POST /sentiment and /topic with the settings' limits: what the gate enforces."""
    max_texts = settings.max_texts_per_request
    max_chars = settings.max_chars_per_text
    refuse = settings.overlong == "refuse"

    class TextsRequest(BaseModel):
        """Texts to classify; the answer has one prediction per text, in the same order."""

        model_config = ConfigDict(extra="forbid")

        texts: list[str] = Field(description=_texts_description(settings),
                                 json_schema_extra=_texts_schema(settings))

        @field_validator("texts", mode="after")
        @classmethod
        def _limits(cls, texts: list[str]) -> list[str]:
            if not texts:
                raise PydanticCustomError("no_texts", "texts is empty; send at least one text")
            if len(texts) > max_texts:
                raise PydanticCustomError(
                    "too_many_texts",
                    "texts holds {count} texts; at most {limit} are accepted per request, "
                    "so split it",
                    {"count": len(texts), "limit": max_texts},
                )
            problems = []
            for i, text in enumerate(texts):
                if not text.strip():
                    problems.append(f"texts[{i}] is empty; send some non-space characters")
                elif refuse and len(text) > max_chars:
                    problems.append(
                        f"texts[{i}] has {len(text)} characters; at most {max_chars} are accepted"
                    )
            if problems:
                raise PydanticCustomError("bad_text", "; ".join(problems[:3]))
            return texts

    return TextsRequest


def explain_request_model(settings: ServiceSettings) -> type[BaseModel]:
    """The body of POST /explain, with the same text limits as the prediction endpoints."""
    max_chars = settings.max_chars_per_text
    refuse = settings.overlong == "refuse"

    class ExplainRequest(BaseModel):
        """One text to explain with the task's model: its tokens, label and attention rollout."""

        model_config = ConfigDict(extra="forbid")

        task: Literal[TASKS] = Field(description="Whose model explains: sentiment or topic.")
        text: str = Field(description=f"A non-empty text; over {max_chars} characters it is "
                          f"{'refused' if refuse else 'truncated'}.", examples=["a dull, lifeless film"])
        layer: int = Field(-1, strict=True, description="Layer of the attention matrix returned (negative counts "
                           "from the last); the rollout weights always use every layer.")
        head: int | None = Field(None, strict=True,
                                 description="Head of that layer; default: the mean of the heads.")

        @field_validator("text", mode="after")
        @classmethod
        def _limits(cls, text: str) -> str:
            if not text.strip():
                raise PydanticCustomError("bad_text", "text is empty; send some non-space characters")
            if refuse and len(text) > max_chars:
                raise PydanticCustomError(
                    "bad_text", "text has {n} characters; at most {limit} are accepted",
                    {"n": len(text), "limit": max_chars})
            return text

    return ExplainRequest


OWN_MESSAGES = {"no_texts", "too_many_texts", "bad_text"}


def validation_error(exc: ValidationError) -> ServiceError:
    """One client-facing message for a request body that failed the request model."""
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        detail = errors[0]["msg"]
        return ServiceError(
            ErrorType.MALFORMED_REQUEST,
            f"the body is not valid JSON ({detail}); send {{\"texts\": [\"...\"]}}",
        )
    parts = []
    for e in errors[:3]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        if e["type"] in OWN_MESSAGES:  # they name the field themselves
            parts.append(e["msg"])
        elif e["type"] == "missing":
            parts.append(f"{loc} is missing; the body must be {{\"texts\": [\"...\"]}}")
        elif e["type"] == "model_type":
            parts.append("the body must be a JSON object like {\"texts\": [\"...\"]}")
        else:
            parts.append(f"{loc or 'body'}: {e['msg']}")
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more problems")
    return ServiceError(ErrorType.INVALID_INPUT, "; ".join(parts))
