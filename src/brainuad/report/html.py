"""Self-contained HTML reports (images embedded, no network) and the tables they show."""

from __future__ import annotations

from pathlib import Path

from brainuad.io.volumes import atomic_path


def _markdown_table_html(table: str) -> str:
    import html

    rows = [r.strip().strip("|").split("|") for r in table.strip().splitlines() if not set(r) <= set("|-: ")]
    head, body = rows[0], rows[1:]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    lines = [f"<table><tr>{cells}</tr>"]
    for row in body:
        lines.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>")
    return "".join(lines) + "</table>"


def _format_value(value) -> str:
    """A value for a person: 4 significant digits, lists joined, nothing for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_format_value(v) for v in value[:12])
        return f"{shown}, … ({len(value)} in all)" if len(value) > 12 else shown
    return str(value)


def summary_rows(summary: dict, prefix: str = "", parent: str | None = None) -> list[tuple[str, str]]:
    """A nested summary flattened into (name, readable value) rows; lists of records are left to their own tables.

    Args:
        summary: The (nested) summary.
        prefix: The names of the sections above, joined by `` › ``.
        parent: The key of the section ``summary`` is, when it is one.
    """
    rows = []
    for key, value in summary.items():
        # A section holding a key of its own name says it once: detect's ``preprocessing`` section holds the case's
        # ``preprocessing`` settings, shown as "preprocessing › preset", not "preprocessing › preprocessing › preset".
        path = prefix.removesuffix(" › ") if key == parent else f"{prefix}{key}"
        name = path.replace("_", " ")
        if isinstance(value, dict):
            rows += summary_rows(value, f"{path} › ", key)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            continue
        else:
            rows.append((name, _format_value(value)))
    return rows


def records_table_html(records: list[dict], columns: dict[str, str]) -> str:
    """An HTML table of ``records`` (dicts): ``columns`` maps a record key to its header."""
    import html

    head = "".join(f"<th>{html.escape(h)}</th>" for h in columns.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format_value(r.get(k)))}</td>" for k in columns) + "</tr>" for r in records
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(
    title: str,
    summary: dict,
    images: dict[str, Path],
    path: str | Path,
    notes: list[str] | None = None,
    table: str | None = None,
    banner: str | None = None,
    sections: dict[str, str] | None = None,
) -> Path:
    """A self-contained HTML page (images embedded as base64, no network) with the summary and figures.

    Args:
        title: Page title.
        summary: Shown as a two-column table at the end (nested keys joined, numbers to 4 significant digits).
        images: Caption → PNG file.
        path: Where to write the page.
        notes: Paragraphs (trusted HTML written by brainuad itself) shown under the title.
        table: A Markdown table shown as an HTML table.
        banner: A warning (trusted HTML) shown in a red box above everything else.
        sections: Heading → trusted HTML (e.g. :func:`records_table_html`), shown after the figures.
    """
    import base64
    import html

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:4px 6px;overflow-wrap:anywhere}"
        ".banner{border:2px solid #b00;background:#fee;padding:0.8em;font-weight:bold}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *([f"<p class='banner'>{banner}</p>"] if banner else []),
        "<p><b>Research tool, not a medical device.</b> Findings are unsupervised anomalies, not diagnoses.</p>",
        *(f"<p>{note}</p>" for note in notes or []),
    ]
    if table:
        parts.append("<h2>Results</h2>" + _markdown_table_html(table))
    for caption, image_path in images.items():
        data = base64.b64encode(Path(image_path).read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    for heading, content in (sections or {}).items():
        parts.append(f"<h2>{html.escape(heading)}</h2>{content}")
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in summary_rows(summary)
    )
    parts.append(f"<h2>Summary</h2><table class='summary'>{rows}</table></body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
    return Path(path)
