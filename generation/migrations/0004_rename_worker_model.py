"""The worker-process model is renamed ``Worker`` -> ``WorkerProcess`` (``Worker`` is the
loop in ``generation.worker``). Its table keeps its name: pinning ``db_table`` first makes
the rename a no-op in the database (no table or constraint is touched), while the content
type is renamed with it, so admin history and permissions follow."""
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('generation', '0003_task_mask_engine_review'),
    ]

    operations = [
        migrations.AlterModelTable(
            name='worker',
            table='generation_worker',
        ),
        migrations.RenameModel(
            old_name='Worker',
            new_name='WorkerProcess',
        ),
        migrations.AlterModelOptions(
            name='workerprocess',
            options={'ordering': ['-started_at'], 'verbose_name': 'worker process'},
        ),
    ]
