package server

import (
	"bytes"
	"context"
	"encoding/csv"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/store"
)

// NewAuditServer returns the AuditService handler.
func NewAuditServer(db *store.DB) avbv1connect.AuditServiceHandler { return &auditServer{db} }

type auditServer struct{ db *store.DB }

func auditFilter(f *avbv1.AuditFilter) store.AuditFilter {
	out := store.AuditFilter{ActorID: parseOptionalID(f.GetActorId()), Action: f.GetAction(),
		ResourceType: f.GetResourceType(), ResourceID: f.GetResourceId()}
	if f.GetStartTime() != nil {
		out.Since = f.GetStartTime().AsTime()
	}
	if f.GetEndTime() != nil {
		out.Until = f.GetEndTime().AsTime()
	}
	return out
}

func auditToProto(e *store.AuditEntry) *avbv1.AuditEntry {
	out := &avbv1.AuditEntry{Id: e.ID.String(), Time: ts(e.CreatedAt), ActorType: e.ActorType, Action: e.Action,
		ResourceType: e.ResourceType, ResourceId: e.ResourceID, IpAddress: e.IPAddress, RequestId: e.RequestID,
		ActorEmail: e.ActorEmail, Description: e.Description, UserAgent: e.UserAgent, Sequence: e.Seq,
		OldValues: jsonStruct(e.OldValues), NewValues: jsonStruct(e.NewValues)}
	if e.ActorID != nil {
		out.ActorId = e.ActorID.String()
	}
	if out.OldValues != nil || out.NewValues != nil {
		out.Changes = &structpb.Struct{Fields: map[string]*structpb.Value{ //nolint:staticcheck // the deprecated field keeps its meaning
			"old": structpb.NewStructValue(orEmptyStruct(out.OldValues)), "new": structpb.NewStructValue(orEmptyStruct(out.NewValues))}}
	}
	return out
}

// jsonStruct is a JSON object as a Struct (nil when empty).
func jsonStruct(b []byte) *structpb.Struct {
	if len(b) <= 2 {
		return nil
	}
	s := &structpb.Struct{}
	if s.UnmarshalJSON(b) != nil {
		return nil
	}
	return s
}

func orEmptyStruct(s *structpb.Struct) *structpb.Struct {
	if s == nil {
		return &structpb.Struct{}
	}
	return s
}

func (s *auditServer) VerifyAuditLog(ctx context.Context, req *connect.Request[avbv1.VerifyAuditLogRequest]) (*connect.Response[avbv1.VerifyAuditLogResponse], error) {
	limit := int(req.Msg.GetMaxBreaks())
	if limit == 0 {
		limit = 10
	}
	v, err := s.db.AuditLog().Verify(ctx, limit)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(VerificationToProto(v)), nil
}

// VerificationToProto is a chain verification as the API reports it.
func VerificationToProto(v store.AuditVerification) *avbv1.VerifyAuditLogResponse {
	out := &avbv1.VerifyAuditLogResponse{Intact: v.Intact(), EntriesChecked: v.Entries, HeadSequence: v.Head,
		RetentionCutSequence: v.CutSeq}
	for _, b := range v.Breaks {
		br := &avbv1.AuditChainBreak{Sequence: b.Seq, Reason: b.Reason}
		if b.EntryID != uuid.Nil {
			br.EntryId = b.EntryID.String()
		}
		out.Breaks = append(out.Breaks, br)
	}
	return out
}

func (s *auditServer) ListAuditLogs(ctx context.Context, req *connect.Request[avbv1.ListAuditLogsRequest]) (*connect.Response[avbv1.ListAuditLogsResponse], error) {
	rows, next, err := s.db.AuditLog().List(ctx, auditFilter(req.Msg.GetFilter()), store.PageSize(req.Msg.GetPageSize()), req.Msg.GetPageToken())
	if err != nil {
		return nil, err
	}
	res := &avbv1.ListAuditLogsResponse{NextPageToken: next}
	for i := range rows {
		res.Entries = append(res.Entries, auditToProto(&rows[i]))
	}
	return connect.NewResponse(res), nil
}

// auditCSVHeader is the export's first row.
var auditCSVHeader = []string{"id", "sequence", "time", "actor_type", "actor_id", "actor_email", "action", "resource_type",
	"resource_id", "description", "ip_address", "user_agent", "request_id", "old_values", "new_values"}

func (s *auditServer) ExportAuditLogs(ctx context.Context, req *connect.Request[avbv1.ExportAuditLogsRequest], stream *connect.ServerStream[avbv1.ExportAuditLogsResponse]) error {
	return ExportAuditCSV(ctx, s.db, auditFilter(req.Msg.GetFilter()), func(chunk []byte, rows int) error {
		return stream.Send(&avbv1.ExportAuditLogsResponse{Csv: chunk, Rows: int32(rows)})
	})
}

// ExportAuditCSV streams the tenant's filtered log as CSV, newest first: a
// header row, then one chunk of whole rows per page (at most 500 rows).
// Pages are read one at a time, so memory stays flat however long the log.
func ExportAuditCSV(ctx context.Context, db *store.DB, f store.AuditFilter, send func(chunk []byte, rows int) error) error {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write(auditCSVHeader)
	token := ""
	for {
		rows, next, err := db.AuditLog().List(ctx, f, store.MaxPageSize, token)
		if err != nil {
			return err
		}
		for _, e := range rows {
			actor := ""
			if e.ActorID != nil {
				actor = e.ActorID.String()
			}
			_ = w.Write([]string{e.ID.String(), strconv.FormatInt(e.Seq, 10), e.CreatedAt.UTC().Format(time.RFC3339Nano),
				e.ActorType, actor, csvCell(e.ActorEmail), csvCell(e.Action), csvCell(e.ResourceType), csvCell(e.ResourceID),
				csvCell(e.Description), csvCell(e.IPAddress), csvCell(e.UserAgent), csvCell(e.RequestID),
				csvCell(string(e.OldValues)), csvCell(string(e.NewValues))})
		}
		w.Flush()
		if err := send(bytes.Clone(buf.Bytes()), len(rows)); err != nil {
			return err
		}
		buf.Reset()
		if next == "" {
			return nil
		}
		token = next
	}
}

// csvCell keeps a spreadsheet from reading a cell as a formula.
func csvCell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
