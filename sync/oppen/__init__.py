"""The Oppen adapter: the only code that speaks HTTP to Oppen (`client`), and when to
try again (`retry`)."""
