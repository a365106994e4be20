"""What to tell people and when: Slack delivery, alert policy, deadlines."""
