"""cartridge-warp: change-data-capture from MySQL/MariaDB (and more) into PostgreSQL."""

__version__ = "0.1.0"
