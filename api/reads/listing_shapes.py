"""What the listing endpoints answer: a page of rows and the token of the
next page (null after the last)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta

from api.shapes import Conversation, ErrorPoint, Struct, User, UtteranceStatus

NextPageToken = Annotated[
    str | None,
    Meta(description="Pass it back as `page_token` for the next page; null after the last page"),
]


class UserPage(Struct):
    users: list[User]
    next_page_token: NextPageToken


class ConversationPage(Struct):
    conversations: list[Conversation]
    next_page_token: NextPageToken


class ListedUtterance(Struct):
    utterance_id: str
    conversation_id: str
    user_id: str
    text: str
    timestamp: datetime
    errors: list[ErrorPoint]
    words_learned: int
    status: UtteranceStatus


class UtterancePage(Struct):
    utterances: list[ListedUtterance]
    next_page_token: NextPageToken
