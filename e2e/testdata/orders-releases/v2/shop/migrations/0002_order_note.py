from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [
        # Nullable: the old release's code, which does not know the column,
        # still inserts rows. The expand step of expand/contract.
        migrations.AddField(model_name="order", name="note", field=models.CharField(max_length=200, null=True)),
    ]
