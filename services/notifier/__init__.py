"""Notifier: tells offline recipients about unread messages by email or SMS, once, without spam."""
