"""`palette ui`: a local browser page on the library, served by the standard library's HTTP server.

    forms.py     a multipart/form-data request -> the task's checked options (`BadRequest` names the problem)
    restorer.py  the models, each loaded once, and the one restore that runs at a time
    server.py    the HTTP routes: the page's static files (a fixed list, from memory), `POST /api/<task>`
    static/      the page: plain HTML, CSS and JavaScript, no build step, no asset from the network
"""
