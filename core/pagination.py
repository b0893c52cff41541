from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class NewestFirstCursorPagination(pagination.CursorPagination):
    """Ledger-style lists: newest first, stable under concurrent inserts, `?limit=`."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
