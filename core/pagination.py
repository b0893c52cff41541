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


class PageNumberPagination(_AsciiPageSize, pagination.PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

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
