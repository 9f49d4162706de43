from derive.cli import console

console()
