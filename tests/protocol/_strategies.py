"""Hypothesis strategies for hub messages whose payloads survive a round trip on both protocols."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from backplane.protocol import (
    PING_MESSAGE,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

# Text without lone surrogates (neither UTF-8 encoder accepts them).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
non_empty_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)

json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=12,
)

msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(scalars, st.binary(max_size=16)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=12,
)

headers = st.one_of(st.none(), st.dictionaries(text, text, min_size=1, max_size=3))
stream_ids = st.one_of(st.none(), st.lists(text, min_size=1, max_size=3))
sequence_ids = st.integers(min_value=0, max_value=2**63 - 1)


def messages(values: st.SearchStrategy[Any]) -> st.SearchStrategy[HubMessage]:
    """Every message type, in the canonical form the parsers produce."""
    arguments = st.lists(values, max_size=4)
    return st.one_of(
        st.builds(
            InvocationMessage,
            target=text,
            arguments=arguments,
            invocation_id=st.one_of(st.none(), non_empty_text),
            stream_ids=stream_ids,
            headers=headers,
        ),
        st.builds(
            StreamInvocationMessage,
            invocation_id=text,
            target=text,
            arguments=arguments,
            stream_ids=stream_ids,
            headers=headers,
        ),
        st.builds(StreamItemMessage, invocation_id=text, item=values, headers=headers),
        st.builds(CompletionMessage, invocation_id=text, headers=headers),
        st.builds(
            CompletionMessage,
            invocation_id=text,
            error=non_empty_text,
            headers=headers,
        ),
        st.builds(
            CompletionMessage,
            invocation_id=text,
            result=values,
            has_result=st.just(True),
            headers=headers,
        ),
        st.builds(CancelInvocationMessage, invocation_id=text, headers=headers),
        st.just(PING_MESSAGE),
        st.builds(CloseMessage, error=st.one_of(st.none(), text), allow_reconnect=st.booleans()),
        st.builds(AckMessage, sequence_id=sequence_ids),
        st.builds(SequenceMessage, sequence_id=sequence_ids),
    )


json_messages = messages(json_values)
msgpack_messages = messages(msgpack_values)
