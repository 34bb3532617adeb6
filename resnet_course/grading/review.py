"""The instructor's review file: flagged answers and near-identical answers across students.

Written to ``grading/<assignment>/review.md`` in the course root after each run:

* **flags** from the static reading of each student's code (``program.static_flags``): imports or
  calls of the course's reference implementation, ``exec`` of computed or encoded strings and
  processes started, signalled or killed (these three score the exercise 0, with the message),
  reading other students' files or the gradebook, ``get_ipython``/input transformers, native code,
  and the grading notes (renamed file, restored cells, timeouts);
* **near-identical answers**: every pair of students whose answer cells, with comments and blank
  lines removed, are at least ``SIMILARITY_THRESHOLD`` % alike (RapidFuzz's normalised
  Indel similarity), and answers that are the same as the course's published solution.

Nothing here changes a score: the verdict applies the zeroing flags (``program.ZEROING``).
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz
from rapidfuzz.process import cdist

#: Two answers at least this similar (0-100, after removing comments and blank lines) are listed.
SIMILARITY_THRESHOLD = 95.0


@dataclass(frozen=True)
class SimilarPair:
    first: str
    second: str
    similarity: float



def normalise_code(source: str) -> str:
    """The code without comments, blank lines and trailing spaces (what a copy can't hide by editing)."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type != tokenize.COMMENT]
        source = tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    lines = [line.rstrip() for line in source.splitlines()]
    return "\n".join(line for line in lines if line.strip())


def similar_answers(answers: dict[str, str], threshold: float = SIMILARITY_THRESHOLD,
                    ignore: tuple[str, ...] = ()) -> list[SimilarPair]:
    """Pairs of students whose normalised answers are at least ``threshold`` % alike.

    ``ignore``: texts that do not count as an answer (the release's untouched stubs).
    """
    ignored = {normalise_code(text) for text in ignore}
    names = sorted(name for name, text in answers.items()
                   if normalise_code(text) and normalise_code(text) not in ignored)
    texts = [normalise_code(answers[name]) for name in names]
    if len(texts) < 2:
        return []
    scores = cdist(texts, texts, scorer=fuzz.ratio, score_cutoff=threshold, workers=-1)
    pairs = [SimilarPair(names[i], names[j], float(scores[i, j]))
             for i in range(len(names)) for j in range(i + 1, len(names)) if scores[i, j] >= threshold]
    return sorted(pairs, key=lambda p: (-p.similarity, p.first, p.second))


def same_as_solution(answers: dict[str, str], solution: str,
                     threshold: float = SIMILARITY_THRESHOLD) -> list[tuple[str, float]]:
    """Students whose answer is the course's published solution, near enough."""
    reference = normalise_code(solution)
    found = []
    for name, text in sorted(answers.items()):
        score = fuzz.ratio(normalise_code(text), reference, score_cutoff=threshold)
        if score:
            found.append((name, float(score)))
    return found


def write_review(path: Path, assignment: str, flags: dict[str, list], notes: dict[str, list[str]],
                 pairs: list[SimilarPair], solution_copies: list[tuple[str, float]]) -> Path:
    """Write the review file (markdown) and return its path."""
    lines = [f"# Review: {assignment}", "",
             "Flags from reading each student's code (no code was run for these), near-identical "
             f"answers (>= {SIMILARITY_THRESHOLD:.0f} % alike once comments and blank lines are removed), "
             "and grading notes. Check each one by hand: a flag is a reason to look, not a verdict "
             "(except reference copies, which the grader scores 0 for that exercise).", ""]
    lines += ["## Flags", ""]
    flagged = {student: items for student, items in sorted(flags.items()) if items}
    if flagged:
        lines += ["| student | kind | exercise | detail |", "|---|---|---|---|"]
        for student, items in flagged.items():
            for flag in items:
                detail = str(getattr(flag, "detail", flag)).replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {student} | {getattr(flag, 'kind', '')} | {getattr(flag, 'exercise', '') or ''} "
                             f"| {detail} |")
    else:
        lines.append("None.")
    lines += ["", "## Near-identical answers", ""]
    if pairs:
        lines += ["| student | student | similarity % |", "|---|---|---|"]
        lines += [f"| {p.first} | {p.second} | {p.similarity:.1f} |" for p in pairs]
    else:
        lines.append("None.")
    lines += ["", "## Answers that are the course's published solution", ""]
    if solution_copies:
        lines += ["| student | similarity % |", "|---|---|"]
        lines += [f"| {student} | {score:.1f} |" for student, score in solution_copies]
    else:
        lines.append("None.")
    lines += ["", "## Grading notes", ""]
    noted = {student: items for student, items in sorted(notes.items()) if items}
    if noted:
        lines += [f"- **{student}**: " + "; ".join(items) for student, items in noted.items()]
    else:
        lines.append("None.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def summary(flags: dict[str, list], pairs: list[SimilarPair], solution_copies: list, path: Path) -> str:
    flagged = sum(1 for items in flags.values() if items)
    return (f"Review: {flagged} student(s) flagged, {len(pairs)} near-identical pair(s), "
            f"{len(solution_copies)} copy(ies) of the published solution: {path}")
