"""The sequencer alone: what the stream hands out for what arrives, with no server and no I/O."""
from __future__ import annotations

from typing import Any

from imagegen_client.sequencing import Sequencer, Step


def event(seq: int) -> dict[str, Any]:
    return {"type": "task_update", "seq": seq, "task_id": 1, "data": {"status": "processing"}}


def page(*seqs: int, has_more: bool = False, recovered: bool = True, last_seq: int | None = None) -> dict[str, Any]:
    return {"events": [event(s) for s in seqs], "has_more": has_more, "recovered": recovered,
            "last_seq": last_seq if last_seq is not None else (seqs[-1] if seqs else 0)}


def handed(step: Step) -> list[Any]:
    return [item["seq"] if "seq" in item else item for item in step.items]


def test_it_hands_out_the_next_event_and_moves_the_cursor() -> None:
    sequencer = Sequencer(cursor=4)
    step = sequencer.live(event(5))
    assert (handed(step), step.fetch, sequencer.cursor) == ([5], False, 5)


def test_it_drops_what_it_already_handed_out() -> None:
    sequencer = Sequencer(cursor=5)
    assert handed(sequencer.live(event(5))) == []
    assert handed(sequencer.live(event(3))) == []
    assert sequencer.cursor == 5


def test_a_gap_asks_for_the_log_and_holds_the_event_until_it_is_filled() -> None:
    sequencer = Sequencer(cursor=1)
    step = sequencer.live(event(4))
    assert (handed(step), step.fetch, sequencer.cursor) == ([], True, 1)  # fetch after=1 first
    step = sequencer.page(page(2, 3, 4))
    assert (handed(step), step.fetch, sequencer.cursor) == ([2, 3, 4], False, 4)  # 4 came with the page: once


def test_a_gap_fill_follows_has_more_page_by_page() -> None:
    sequencer = Sequencer(cursor=1)
    assert sequencer.live(event(6)).fetch
    first = sequencer.page(page(2, 3, has_more=True))
    assert (handed(first), first.fetch) == ([2, 3], True)
    second = sequencer.page(page(4, 5))
    assert (handed(second), second.fetch, sequencer.cursor) == ([4, 5, 6], False, 6)


def test_a_gap_the_log_cannot_fill_is_accepted_rather_than_fetched_forever() -> None:
    sequencer = Sequencer(cursor=1)
    assert sequencer.live(event(4)).fetch
    step = sequencer.page(page(last_seq=4))  # nothing between: the server has no 2 and 3
    assert (handed(step), step.fetch, sequencer.cursor) == ([4], False, 4)


def test_a_replay_is_handed_out_at_sync_and_a_server_ahead_of_it_is_caught_up() -> None:
    sequencer = Sequencer(cursor=2)
    step = sequencer.synced([event(2), event(3)], {"type": "sync_complete", "last_seq": 5, "recovered": True})
    assert (handed(step), step.fetch) == ([3], True)  # replay stopped at 3, the server is at 5
    step = sequencer.page(page(4, 5))
    assert (handed(step), step.fetch, sequencer.cursor) == ([4, 5], False, 5)


def test_a_sync_that_was_not_recovered_yields_a_reset_before_what_remains() -> None:
    sequencer = Sequencer(cursor=1)
    step = sequencer.synced([event(4), event(5)], {"type": "sync_complete", "last_seq": 5, "recovered": False})
    assert (handed(step), step.fetch, sequencer.cursor) == ([{"type": "reset", "last_seq": 5}, 4, 5], False, 5)


def test_a_sync_with_nothing_left_moves_the_cursor_to_the_servers_last_seq() -> None:
    sequencer = Sequencer(cursor=1)
    step = sequencer.synced([], {"type": "sync_complete", "last_seq": 9, "recovered": False})
    assert (handed(step), sequencer.cursor) == ([{"type": "reset", "last_seq": 9}], 9)
    assert handed(sequencer.live(event(10))) == [10]


def test_a_page_that_was_not_recovered_resets_and_skips_to_what_it_holds() -> None:
    sequencer = Sequencer(cursor=1)
    step = sequencer.page(page(7, 8, recovered=False, last_seq=8))
    assert (handed(step), sequencer.cursor) == ([{"type": "reset", "last_seq": 8}, 7, 8], 8)


def test_a_lost_connection_forgets_held_events_so_the_resume_replays_them() -> None:
    sequencer = Sequencer(cursor=1)
    assert sequencer.live(event(3)).fetch
    sequencer.reset_transport()  # the fetch failed and the stream reconnects with after=1
    assert sequencer.cursor == 1
    step = sequencer.synced([event(2), event(3)], {"type": "sync_complete", "last_seq": 3, "recovered": True})
    assert (handed(step), step.fetch) == ([2, 3], False)
