-- Version 6: the event types of protocol 1.1's tool approval.
--
-- `tool.approval_requested` (a call waits for the person's answer) and `tool.approval` (the
-- answer) are stored like every other event, so the type check lists them.
alter table session_events drop constraint if exists session_events_type_check;
alter table session_events add constraint session_events_type_check
    check (type in ('user.message', 'tool.call', 'tool.result', 'assistant.message',
                    'tool.approval_requested', 'tool.approval'));
