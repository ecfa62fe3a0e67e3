"""`palette ui`: a local browser page on the library, served by the standard library's HTTP server.

    forms.py     a multipart/form-data request -> a `RestoreSettings` (`BadRequest` names the problem)
    restorer.py  the models, each loaded once, and the one restore (`restore_files`) that runs at a time
    server.py    the HTTP routes: the page's static files (a fixed list, from memory), `POST /api/<task>`
    static/      the page: HTML, CSS and JavaScript modules (state.js, canvas.js, api.js, panels.js, app.js),
                 no build step, no asset from the network
"""
