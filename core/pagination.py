from rest_framework import pagination

from core.parsing import ascii_int


class _AsciiPageSize:
    """`?page_size=` / `?limit=` are ASCII digits: DRF's int() would read "٣" as 3. Anything else
    falls back to the default size, as DRF does for "abc"."""

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and ascii_int(raw) is None:
            return self.page_size
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view):
        # Any text is taken (not a number: the default), so the document says string, not integer.
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "string"}
                parameter["description"] = (
                    f"Results per page, 1 to {self.max_page_size} (more is {self.max_page_size}); "
                    f"default {self.page_size}, also for anything that is not a number.")
        return parameters


class PageNumberPagination(_AsciiPageSize, pagination.PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                # DRF reads an empty value as page 1 and "last" as the last page.
                parameter["schema"] = {"anyOf": [{"type": "integer", "minimum": 1},
                                                 {"type": "string", "enum": ["last", ""]}]}
                parameter["description"] = "Page number from 1, or `last`; a page that does not exist is 404."
        return parameters

    def get_page_number(self, request, paginator):
        number = super().get_page_number(request, paginator)
        if isinstance(number, str) and ascii_int(number) is None:
            return "invalid"  # the paginator's "Invalid page." 404, as for "abc" (not page 3 for "٣")
        return number


class NewestFirstCursorPagination(_AsciiPageSize, pagination.CursorPagination):
    """Ledger-style lists: newest first, stable under concurrent inserts, `?limit=`."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
