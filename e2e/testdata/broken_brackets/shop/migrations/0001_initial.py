from django.db import migrations, models


def seed(apps, schema_editor):
    apps.get_model("shop", "Setting").objects.create(name="greeting", value="seeded by 0001")


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Setting",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=50, unique=True)),
                ("value", models.CharField(max_length=200)),
            ],
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
