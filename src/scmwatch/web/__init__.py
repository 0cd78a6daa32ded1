"""HTML for people: the report (``scmwatch report``) and the ``serve`` console (``console.py``).

``render.py`` holds the Jinja2 environment and the escaping filters; ``charts.py`` the inline
SVG geometry; ``templates/`` the pages. Reusable pieces (summary cards, timeline, host x rule
matrix, lateral-movement graph, alert and evidence tables) are macros in
``templates/macros.html.j2``, so a console page can show the same views as the report.
"""
