"""Operations: data-dir initialisation, doctor, backups, reload and systemd integration."""
