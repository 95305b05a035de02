"""Exceptions raised by the client."""


class MechWatchError(Exception):
    """The daemon answered a request with an error: `code` is its stable error code (e.g. `wrong_width`),
    `message` names the field and what was expected, `id` is the trace id it concerns (if any)."""

    def __init__(self, code, message, id=None, results=None):
        super().__init__(f"{code}: {message}" + (f" (id {id})" if id is not None else ""))
        self.code = code
        self.message = message
        self.id = id
        #: For batch calls: every result in request order, None where the daemon refused the trace.
        self.results = results


class MechWatchConnectionError(MechWatchError):
    """The daemon cannot be reached (no socket, nobody listening, permission denied) or hung up."""

    def __init__(self, message):
        super().__init__("connection", message)


class MechWatchProtocolError(MechWatchError):
    """The daemon's reply could not be understood, or it speaks another protocol version."""

    def __init__(self, message):
        super().__init__("protocol", message)
