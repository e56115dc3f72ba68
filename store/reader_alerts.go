package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
)

// parseAddr is the reverse of addrStrings: text to 4 or 16 bytes.
func parseAddr(s string) ([]byte, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return nil, err
	}
	return a.AsSlice(), nil
}

// AlertRow is one stored alert, as the forensic commands show it.
type AlertRow struct {
	Time           time.Time `json:"time"`
	ID             uuid.UUID `json:"alert_id"`
	IncidentID     uuid.UUID `json:"incident_id"`
	Host           string    `json:"host"`
	ContainerID    string    `json:"container_id"`
	ContainerName  string    `json:"container_name"`
	ImageRef       string    `json:"image_ref"`
	ImageDigest    string    `json:"image_digest"`
	Score          float64   `json:"score"`
	Rule           string    `json:"rule"`
	Priority       string    `json:"priority"`
	ReasonCodes    []string  `json:"reason_codes"`
	ReasonMessages []string  `json:"reason_messages"`
	Mitre          []string  `json:"mitre"`
	TriggerEventID uuid.UUID `json:"trigger_event_id"`
	TriggerPID     uint32    `json:"trigger_pid"`
	TriggerComm    string    `json:"trigger_comm"`
}

// Alerts returns the alerts s selects (Kinds is ignored), oldest first.
// An id is a filter too when set.
func (r *Reader) Alerts(ctx context.Context, s Selection, id uuid.UUID) ([]AlertRow, error) {
	q := `SELECT ts, ts_ns, alert_id, incident_id, host, container_id, container_name, image_ref, image_digest,
 score, rule, priority, reason_codes, reason_messages, mitre, trigger_event_id, trigger_pid, trigger_comm
 FROM alerts` + s.where(false)
	if id != uuid.Nil {
		if s.where(false) == "" {
			q += " WHERE "
		} else {
			q += " AND "
		}
		q += "alert_id = " + quote(id.String())
	}
	q += " ORDER BY ts, ts_ns, alert_id"
	if s.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", s.Limit)
	}
	rows, err := r.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("store: reading alerts at clickhouse %s: %w", r.addr, err)
	}
	defer rows.Close()
	var out []AlertRow
	for rows.Next() {
		var a AlertRow
		var ns uint32
		if err := rows.Scan(&a.Time, &ns, &a.ID, &a.IncidentID, &a.Host, &a.ContainerID, &a.ContainerName, &a.ImageRef,
			&a.ImageDigest, &a.Score, &a.Rule, &a.Priority, &a.ReasonCodes, &a.ReasonMessages, &a.Mitre,
			&a.TriggerEventID, &a.TriggerPID, &a.TriggerComm); err != nil {
			return nil, fmt.Errorf("store: reading alerts: %w", err)
		}
		a.Time = a.Time.Add(time.Duration(ns)).UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: reading alerts: %w", err)
	}
	return out, nil
}

// ActionRow is one stored responder action.
type ActionRow struct {
	Time          time.Time `json:"time"`
	ID            uuid.UUID `json:"action_id"`
	Host          string    `json:"host"`
	ContainerID   string    `json:"container_id"`
	ContainerName string    `json:"container_name"`
	ImageRef      string    `json:"image_ref"`
	Type          string    `json:"type"`
	Result        string    `json:"result"`
	Actor         string    `json:"actor"`
	Reason        string    `json:"reason"`
	Method        string    `json:"method"`
	AlertID       uuid.UUID `json:"alert_id"`
	Score         float64   `json:"score"`
}

// Actions returns the responder actions s selects (Kinds is ignored),
// oldest first.
func (r *Reader) Actions(ctx context.Context, s Selection) ([]ActionRow, error) {
	q := `SELECT ts, ts_ns, action_id, host, container_id, container_name, image_ref, type, result, actor, reason,
 method, alert_id, score FROM actions` + s.where(false) + " ORDER BY ts, ts_ns, action_id"
	if s.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", s.Limit)
	}
	rows, err := r.conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("store: reading actions at clickhouse %s: %w", r.addr, err)
	}
	defer rows.Close()
	var out []ActionRow
	for rows.Next() {
		var a ActionRow
		var ns uint32
		if err := rows.Scan(&a.Time, &ns, &a.ID, &a.Host, &a.ContainerID, &a.ContainerName, &a.ImageRef, &a.Type,
			&a.Result, &a.Actor, &a.Reason, &a.Method, &a.AlertID, &a.Score); err != nil {
			return nil, fmt.Errorf("store: reading actions: %w", err)
		}
		a.Time = a.Time.Add(time.Duration(ns)).UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: reading actions: %w", err)
	}
	return out, nil
}
