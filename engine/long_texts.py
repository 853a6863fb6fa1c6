"""What the model reads of a text longer than its ``max_length`` tokens: one rule for training,
the export's checks, the service, the batch job, `evaluate` and `explain`.

- ``truncate``: the first ``max_length`` tokens (what BERT fine-tuning usually does).
- ``head_tail``: the first ``head`` tokens and the last ``max_length - head`` (Sun et al. 2019,
  "How to Fine-Tune BERT for Text Classification": reviews state their verdict at the end).
- ``chunk``: overlapping windows of ``max_length`` tokens (``overlap`` tokens shared by
  neighbours) over the whole text, at most ``max_windows`` of them, spread evenly from the first
  token to the last when the text needs more; the model reads each and their logits are averaged.

Rules work on a tokenized text with the tokenizer's special tokens (``[CLS] ... [SEP]``,
``<s> ... </s>``) in place: the content between them is cut and each window gets the same specials
back. A window is a list of positions into the text's tokens, so the engine takes their ids and
`explain` their offsets.
Pure Python, no numpy or torch: the tokenizer of any stage can feed it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

RULES = ("truncate", "head_tail", "chunk")


@dataclass(frozen=True)
class LongTextRule:
    rule: str = "truncate"
    max_windows: int = 4  # chunk: windows read per text at most
    overlap: int = 32  # chunk: tokens two neighbouring windows share
    head: int = 32  # head_tail: tokens kept from the start; the rest of the window is the end

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"long-text rule must be one of {', '.join(RULES)}, not {self.rule!r}")
        for name in ("max_windows", "overlap", "head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number of windows or tokens, not {value!r}")
        if self.max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, not {self.max_windows}")
        if self.overlap < 0 or self.head < 0:
            raise ValueError("overlap and head must be 0 or more tokens")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "LongTextRule":
        """A manifest's or training record's ``long_texts``; none (older bundles): truncate."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"long_texts must be a mapping with a 'rule', not {data!r}")
        known = {k: data[k] for k in ("rule", "max_windows", "overlap", "head") if k in data}
        return cls(**known)

    def windows(self, special_mask: Sequence[int], max_length: int) -> tuple[list[list[int]], bool]:
        """The windows the model reads of one tokenized text, as positions into its tokens (its
        special tokens, given by ``special_mask``, in place in each), and whether some of its
        tokens are in none of them."""
        n = len(special_mask)
        lead = 0
        while lead < n and special_mask[lead]:
            lead += 1
        trail = 0
        while trail < n - lead and special_mask[n - 1 - trail]:
            trail += 1
        prefix, suffix = list(range(lead)), list(range(n - trail, n))
        content = n - lead - trail
        room = max_length - lead - trail
        if room < 1:
            raise ValueError(f"max_length {max_length} leaves no room beside the special tokens")
        if content <= room:
            return [list(range(n))], False
        if self.rule == "truncate":
            return [prefix + list(range(lead, lead + room)) + suffix], True
        if self.rule == "head_tail":
            head = min(self.head, room)
            tail = room - head
            return [prefix + list(range(lead, lead + head))
                    + list(range(n - trail - tail, n - trail)) + suffix], True
        starts = chunk_starts(content, room, self.overlap, self.max_windows)
        # tokens between two windows, or after the last (max_windows=1 reads only the start)
        gaps = starts[-1] + room < content or any(b > a + room for a, b in zip(starts, starts[1:]))
        return [prefix + list(range(lead + s, lead + s + room)) + suffix for s in starts], gaps


def chunk_starts(length: int, room: int, overlap: int, max_windows: int) -> list[int]:
    """Where each window of ``room`` tokens starts over ``length`` content tokens: every
    ``room - overlap`` tokens, the last one flush with the end; past ``max_windows``, that many
    spread evenly from the first token to the last (leaving gaps between them)."""
    if length <= room:
        return [0]
    step = max(1, room - min(overlap, room - 1))
    last = length - room
    starts = list(range(0, last, step)) + [last]
    if len(starts) <= max_windows:
        return starts
    if max_windows == 1:
        return [0]
    return [round(i * last / (max_windows - 1)) for i in range(max_windows)]
