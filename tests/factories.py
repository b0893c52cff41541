import factory

from inventory.models import Location, Sku


class LocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Location
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"loc-{n}")
    name = factory.LazyAttribute(lambda o: f"Location {o.code}")
    kind = "warehouse"


class SkuFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Sku
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"SKU-{n}")
    name = factory.LazyAttribute(lambda o: f"Product {o.code}")
    safety_stock = 0
