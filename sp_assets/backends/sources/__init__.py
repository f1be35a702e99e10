"""Sources: where source images come from (the embedded demo pool, or a folder of your images)."""
