"""The notifier: priority-1 assignments to the targets of their team (README "Notifications")."""
