"""The Script API (A1111's ``modules.scripts.Script``) and the built-in scripts written against it."""
