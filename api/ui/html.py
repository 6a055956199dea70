"""The dashboard's HTML, built from escaped strings: a handful of pages with
a few fields each do not earn a template engine. Every value that comes from
a request or the database goes through `esc`; the pages carry no inline
script or style, so the Content-Security-Policy can forbid both."""

from __future__ import annotations

from html import escape

# Scripts and styles only from this origin, nothing inline, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
CHART_JS = "/ui/vendor/chart.umd.min.js"


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def page(title: str, main: str, *, tenant: str | None = None, scripts: tuple[str, ...] = ()) -> str:
    """A whole page; `tenant` set means signed in (navigation and sign-out shown)."""
    loaded = "".join(
        f'<script src="{esc(s)}"></script>' if s == CHART_JS
        else f'<script type="module" src="{esc(s)}"></script>'
        for s in scripts
    )  # fmt: skip
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · utterstream</title>"
        # No favicon request (a 404 in every page's console).
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/ui/static/ui.css"></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'{_header(tenant)}<main id="main">{main}</main>{loaded}</body></html>'
    )


def _header(tenant: str | None) -> str:
    if tenant is None:
        return '<header><span class="brand">utterstream</span></header>'
    return (
        '<header><span class="brand">utterstream</span><nav aria-label="Main">'
        '<a href="/ui/learners">Learners</a><a href="/ui/ask">Ask</a></nav>'
        f'<span class="tenant">tenant {esc(tenant)}</span>'
        '<form method="post" action="/ui/sign-out"><button type="submit">Sign out</button></form>'
        "</header>"
    )


def sign_in_form(error: str | None = None) -> str:
    alert = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    return (
        "<h1>Sign in</h1>"
        f"{alert}"
        '<form method="post" action="/ui/sign-in" class="sign-in">'
        '<label for="api_key">API key</label>'
        '<input id="api_key" name="api_key" type="password" autocomplete="off" required '
        'spellcheck="false" placeholder="us_...">'
        '<button type="submit">Sign in</button></form>'
        "<p>The key stays on the server: the browser keeps only a session cookie, "
        "which signing out ends.</p>"
    )


def learners() -> str:
    return (
        "<h1>Learners</h1>"
        '<form class="search" role="search" id="learner-search">'
        '<label for="prefix">Learner id starts with</label>'
        '<input id="prefix" name="prefix" type="search" autocomplete="off" spellcheck="false">'
        '<button type="submit">Search</button></form>'
        '<p class="status" role="status" aria-live="polite"></p>'
        '<table class="learners"><caption>Learners of this tenant, by id</caption>'
        '<thead><tr><th scope="col">id</th><th scope="col">name</th><th scope="col">email</th>'
        '<th scope="col">since</th></tr></thead><tbody id="learner-rows"></tbody></table>'
        '<button type="button" id="more" hidden>More learners</button>'
    )


def _panel(key: str, title: str, controls: str, body: str) -> str:
    """A panel of the learner page: its script fills `body` and the `as_of`."""
    return (
        f'<section class="panel" id="{key}" aria-labelledby="{key}-h">'
        f'<div class="panel-head"><h2 id="{key}-h">{esc(title)}</h2>{controls}</div>'
        f'<p class="as-of">as of <span data-as-of>…</span></p>'
        f'<p class="status" role="status" aria-live="polite"></p>{body}</section>'
    )


def _select(key: str, label: str, options: list[tuple[str, str]], chosen: str) -> str:
    shown = "".join(
        f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(t)}</option>'
        for v, t in options
    )
    return f'<label for="{key}">{esc(label)}</label><select id="{key}">{shown}</select>'


def _chart(key: str, label: str) -> str:
    return (
        f'<div class="chart"><canvas id="{key}-chart" role="img" aria-label="{esc(label)}">'
        f"</canvas></div><details><summary>{esc(label)}: table</summary>"
        f'<div class="table" id="{key}-table"></div></details>'
    )


def learner(user_id: str, name: str, email: str) -> str:
    windows = [
        ("minute", "minutes, last hour"),
        ("hour", "hours, last 2 days"),
        ("day", "days, last 30 days"),
    ]
    periods = [("day", "days, last 30"), ("week", "weeks, last 12"), ("month", "months, last 12")]
    return (
        f'<div class="learner-head" data-user-id="{esc(user_id)}">'
        f"<h1>{esc(name)} <small>{esc(user_id)}</small></h1><p>{esc(email)}</p>"
        '<div class="controls"><label for="tz">Time zone</label>'
        '<select id="tz"></select></div></div><div class="panels">'
        + _panel(
            "errors", "Error trend",
            _select("errors-window", "Window", windows, "hour"),
            _chart("errors", "Errors per window, stacked by category"),
        )
        + _panel("top", "Top errors", "", _chart("top", "Most frequent errors, all time"))
        + _panel(
            "learning", "Words practised",
            _select("learning-granularity", "Per", periods, "day"),
            _chart("learning", "Words practised per period"),
        )
        + _panel(
            "insights", "Insights, last 7 days", "",
            _chart("sentiment", "Sentiment over time")
            + _chart("topics", "Topics")
            + '<div class="table" id="insight-list" tabindex="0" role="region" '
            'aria-label="Insights list, scrolls sideways on narrow screens"></div>'
            '<div class="pager"><button type="button" id="insights-first">First page</button>'
            '<button type="button" id="insights-next">Next page</button></div>',
        )
        + _panel(
            "utterances", "Utterances, last 24 hours", "",
            '<p class="count"><span id="utterance-count">0</span> utterances</p>'
            '<ol class="utterances" id="utterance-list"></ol>',
        )
        + "</div>"
    )  # fmt: skip


def ask() -> str:
    return (
        "<h1>Ask</h1>"
        '<form id="ask-form" class="ask">'
        '<label for="question">Question</label>'
        '<input id="question" name="question" type="text" autocomplete="off" required '
        'placeholder="top errors of learner-001 this month">'
        '<button type="submit">Ask</button></form>'
        '<p class="status" role="status" aria-live="polite"></p>'
        '<section id="answer" aria-labelledby="answer-h" hidden><h2 id="answer-h">Answer</h2>'
        '<p id="explanation"></p>'
        '<p>The same answer: GET <code id="get-url"></code> <span id="answered-by"></span></p>'
        '<div class="chart"><canvas id="answer-chart" role="img" aria-label="The answer as a chart">'
        '</canvas></div><div class="table" id="answer-table"></div>'
        '<details><summary>Plan</summary><pre id="plan"></pre></details></section>'
    )


def not_found(user_id: str) -> str:
    return f'<h1>Not found</h1><p>There is no learner {esc(user_id)} in this tenant.</p><p><a href="/ui/learners">All learners</a></p>'
