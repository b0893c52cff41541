from core.errors import json_error


class RejectNulMiddleware:
    """A NUL character in the path or query string can only be an attack or a bug, and
    PostgreSQL refuses it in any text comparison (a 500 deep in a lookup). Refuse it at the door."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            return json_error(400, "bad_request", "NUL characters are not allowed in URLs.")
        return self.get_response(request)
