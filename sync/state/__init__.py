"""The state layer: tables and engine (`schema`), which invoice is which Oppen record
(`binder`), runs and their locks (`runs`), the console's queries (`read_models`) and
the schema's migrations."""
