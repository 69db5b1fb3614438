"""Real servers the tests start on 127.0.0.1 (bounded in time, stopped by PID)."""
