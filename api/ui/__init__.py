"""The dashboard at /ui: server-rendered pages (pages.py, html.py) whose
small scripts (static/) read the v1 API with the signed-in session
(api.edge.sessions) and draw with the pinned Chart.js (vendor/, fetched by
`python -m api assets`)."""
