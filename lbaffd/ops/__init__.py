"""What operators see and touch: control socket, metrics, logs, status, the
OVS-style process options, systemd notify, the man page."""
