"""Learners and their conversations (cql/schema/002_learners.cql). Field
order is column order."""

from __future__ import annotations

from datetime import datetime

import msgspec

from cql.table import Table


class UserRow(msgspec.Struct):
    tenant: str
    user_id: str
    email: str
    name: str
    created_at: datetime


class ConversationRow(msgspec.Struct):
    tenant: str
    conversation_id: str
    user_id: str
    title: str | None
    started_at: datetime


USERS = Table("users_by_id", UserRow, ["tenant", "user_id"])
CONVERSATIONS = Table("conversations_by_id", ConversationRow, ["tenant", "conversation_id"])
