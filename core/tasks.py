"""The tasks this product serves and ships demo models for, and their label order (the order of the
public sets)."""

TASK_LABELS: dict[str, list[str]] = {
    "sentiment": ["negative", "positive"],
    "topic": ["World", "Sports", "Business", "Sci/Tech"],
}
# The tasks the service has an endpoint for (POST /sentiment, POST /topic) and demo models of.
TASKS: tuple[str, ...] = tuple(TASK_LABELS)

# Hub datasets a user with a network may name instead of a file: the id of each class.
HUB_LABELS: dict[str, list[str]] = {
    "imdb": ["negative", "positive"],
    "stanfordnlp/imdb": ["negative", "positive"],
    "ag_news": ["World", "Sports", "Business", "Sci/Tech"],
    "fancyzhx/ag_news": ["World", "Sports", "Business", "Sci/Tech"],
    "sst2": ["negative", "positive"],
    "stanfordnlp/sst2": ["negative", "positive"],
}


def label_order(task: str, labels: set[str]) -> list[str]:
    """The known order for a known task's labels, else sorted, so ids are stable across runs."""
    known = TASK_LABELS.get(task)
    if known and set(known) == labels:
        return list(known)
    return sorted(labels)
