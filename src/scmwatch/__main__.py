from scmwatch.cli import entry

entry()
