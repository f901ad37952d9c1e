-- Version 6: the event types of protocol 1.1's tool approval (`tool.approval_requested`,
-- `tool.approval`). SQLite's `session_events.type` has no check to widen; the step keeps the
-- versions of both dialects in step.
select 1;
