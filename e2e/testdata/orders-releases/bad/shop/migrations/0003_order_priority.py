from django.db import migrations, models


class Migration(migrations.Migration):
    # The column is added, then the data step fails (no such column): on
    # PostgreSQL the migration is one transaction, DDL included, so the
    # column goes too.
    dependencies = [("shop", "0002_order_note")]
    operations = [
        migrations.AddField(model_name="order", name="priority", field=models.IntegerField(null=True)),
        migrations.RunSQL("UPDATE shop_order SET priority = no_such_column", migrations.RunSQL.noop),
    ]
