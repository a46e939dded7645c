-- Windowed quotas that every node counts against (`store/shared_counts.rs`):
-- an organization's uses of `quota` in the window starting at `window_ms`.
-- A window's row is made at its first use, when the older windows of the
-- same quota and organization are deleted: at most one row each.
CREATE TABLE quota_uses (
    org       text NOT NULL,
    quota     text NOT NULL,
    window_ms bigint NOT NULL,
    used      bigint NOT NULL,
    PRIMARY KEY (org, quota, window_ms)
);
