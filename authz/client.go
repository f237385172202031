package authz

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/authzed/authzed-go/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/agentvoicebox/avb/platform/dependency"
)

// Schema is the authorization model, written to SpiceDB at start.
//
//go:embed schema.zed
var Schema string

// Object names a SpiceDB object ("tenant", id).
type Object struct {
	Type string
	ID   string
}

// Relationship is resource#relation@subject (optionally subject#subjectRelation).
type Relationship struct {
	Resource        Object
	Relation        string
	Subject         Object
	SubjectRelation string
}

// Client talks to SpiceDB. Checks take the ZedToken of the newest write that
// could affect them ("" means fully consistent), so a check never misses a
// grant or a revoke that happened before it.
type Client struct {
	c *authzed.Client
	// guard bounds every call (checks and lookups within check, writes
	// within write) and fails fast while SpiceDB is known to be down.
	guard        *dependency.Guard
	check, write time.Duration
}

// Guard bounds every call of c: checks and lookups within check, writes and
// deletes within write (both capped by the request's deadline).
func (c *Client) Guard(g *dependency.Guard, check, write time.Duration) {
	c.guard, c.check, c.write = g, check, write
}

// do runs one call under the guard.
func (c *Client) do(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) error) error {
	if c.guard == nil {
		return fn(ctx)
	}
	return c.guard.Do(ctx, timeout, fn)
}

// bearer is gRPC per-call credentials carrying the preshared key.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (b bearer) RequireTransportSecurity() bool { return false }

// Dial connects to SpiceDB at endpoint with a preshared key. It does not
// wait for the server.
func Dial(endpoint, token string, plaintext bool) (*Client, error) {
	creds := grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(nil, ""))
	if plaintext {
		creds = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	c, err := authzed.NewClient(endpoint, creds, grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		return nil, fmt.Errorf("connect to spicedb at %s: %w", endpoint, err)
	}
	return &Client{c: c}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// WriteSchema writes the embedded schema.
func (c *Client) WriteSchema(ctx context.Context) error {
	err := c.do(ctx, c.write, func(ctx context.Context) error {
		_, err := c.c.WriteSchema(ctx, &v1.WriteSchemaRequest{Schema: Schema})
		return err
	})
	if err != nil {
		return fmt.Errorf("write authorization schema: %w", err)
	}
	return nil
}

func consistency(zedToken string) *v1.Consistency {
	if zedToken == "" {
		return &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}}
	}
	return &v1.Consistency{Requirement: &v1.Consistency_AtLeastAsFresh{AtLeastAsFresh: &v1.ZedToken{Token: zedToken}}}
}

func ref(o Object) *v1.ObjectReference {
	return &v1.ObjectReference{ObjectType: o.Type, ObjectId: o.ID}
}

func subject(o Object, relation string) *v1.SubjectReference {
	return &v1.SubjectReference{Object: ref(o), OptionalRelation: relation}
}

// Check reports whether subject holds permission on resource.
func (c *Client) Check(ctx context.Context, resource Object, permission string, sub Object, zedToken string) (bool, error) {
	var res *v1.CheckPermissionResponse
	err := c.do(ctx, c.check, func(ctx context.Context) (err error) {
		res, err = c.c.CheckPermission(ctx, &v1.CheckPermissionRequest{
			Consistency: consistency(zedToken), Resource: ref(resource), Permission: permission, Subject: subject(sub, ""),
		})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check %s:%s#%s: %w", resource.Type, resource.ID, permission, err)
	}
	return res.GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION, nil
}

// CheckBulk checks many resources in one round trip; the answers follow the
// order of resources.
func (c *Client) CheckBulk(ctx context.Context, resources []Object, permission string, sub Object, zedToken string) ([]bool, error) {
	req := &v1.CheckBulkPermissionsRequest{Consistency: consistency(zedToken)}
	for _, r := range resources {
		req.Items = append(req.Items, &v1.CheckBulkPermissionsRequestItem{Resource: ref(r), Permission: permission, Subject: subject(sub, "")})
	}
	var res *v1.CheckBulkPermissionsResponse
	err := c.do(ctx, c.check, func(ctx context.Context) (err error) {
		res, err = c.c.CheckBulkPermissions(ctx, req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bulk check %s: %w", permission, err)
	}
	out := make([]bool, len(resources))
	for i, pair := range res.GetPairs() {
		if e := pair.GetError(); e != nil {
			return nil, fmt.Errorf("bulk check %s item %d: %s", permission, i, e.GetMessage())
		}
		out[i] = pair.GetItem().GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
	}
	return out, nil
}

// Write touches (creates or keeps) and deletes relationships atomically and
// returns the ZedToken of the write.
func (c *Client) Write(ctx context.Context, touch, del []Relationship) (string, error) {
	req := &v1.WriteRelationshipsRequest{}
	for _, r := range touch {
		req.Updates = append(req.Updates, update(v1.RelationshipUpdate_OPERATION_TOUCH, r))
	}
	for _, r := range del {
		req.Updates = append(req.Updates, update(v1.RelationshipUpdate_OPERATION_DELETE, r))
	}
	if len(req.Updates) == 0 {
		return "", nil
	}
	var res *v1.WriteRelationshipsResponse
	err := c.do(ctx, c.write, func(ctx context.Context) (err error) {
		res, err = c.c.WriteRelationships(ctx, req)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("write relationships: %w", err)
	}
	return res.GetWrittenAt().GetToken(), nil
}

func update(op v1.RelationshipUpdate_Operation, r Relationship) *v1.RelationshipUpdate {
	return &v1.RelationshipUpdate{Operation: op, Relationship: &v1.Relationship{
		Resource: ref(r.Resource), Relation: r.Relation, Subject: subject(r.Subject, r.SubjectRelation),
	}}
}

// DeleteAll deletes every relationship of a resource (when it is deleted)
// and every one naming it as subject (an API key's roles), returning the
// ZedToken of the last delete.
func (c *Client) DeleteAll(ctx context.Context, o Object) (string, error) {
	var token string
	for _, f := range []*v1.RelationshipFilter{
		{ResourceType: o.Type, OptionalResourceId: o.ID},
		{ResourceType: "tenant", OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: o.Type, OptionalSubjectId: o.ID}},
		{ResourceType: "project", OptionalSubjectFilter: &v1.SubjectFilter{SubjectType: o.Type, OptionalSubjectId: o.ID}},
	} {
		var res *v1.DeleteRelationshipsResponse
		err := c.do(ctx, c.write, func(ctx context.Context) (err error) {
			res, err = c.c.DeleteRelationships(ctx, &v1.DeleteRelationshipsRequest{RelationshipFilter: f})
			return err
		})
		if err != nil {
			return "", fmt.Errorf("delete relationships of %s:%s: %w", o.Type, o.ID, err)
		}
		token = res.GetDeletedAt().GetToken()
	}
	return token, nil
}

// LookupResources lists the ids of resources of a type on which subject holds permission.
func (c *Client) LookupResources(ctx context.Context, resourceType, permission string, sub Object, zedToken string) ([]string, error) {
	var ids []string
	err := c.do(ctx, c.check, func(ctx context.Context) error {
		stream, err := c.c.LookupResources(ctx, &v1.LookupResourcesRequest{
			Consistency: consistency(zedToken), ResourceObjectType: resourceType, Permission: permission, Subject: subject(sub, ""),
		})
		if err != nil {
			return err
		}
		ids, err = collect(stream, (*v1.LookupResourcesResponse).GetResourceObjectId)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lookup %s %s: %w", resourceType, permission, err)
	}
	return ids, nil
}

// collect reads a server stream to its end, keeping one string of each message.
func collect[M any](stream interface{ Recv() (M, error) }, id func(M) string) ([]string, error) {
	var ids []string
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return nil, err
		}
		ids = append(ids, id(res))
	}
}

// LookupSubjects lists the ids of subjects of a type that hold permission on resource.
func (c *Client) LookupSubjects(ctx context.Context, resource Object, permission, subjectType, zedToken string) ([]string, error) {
	var ids []string
	err := c.do(ctx, c.check, func(ctx context.Context) error {
		stream, err := c.c.LookupSubjects(ctx, &v1.LookupSubjectsRequest{
			Consistency: consistency(zedToken), Resource: ref(resource), Permission: permission, SubjectObjectType: subjectType,
		})
		if err != nil {
			return err
		}
		ids, err = collect(stream, func(r *v1.LookupSubjectsResponse) string { return r.GetSubject().GetSubjectObjectId() })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lookup subjects of %s:%s#%s: %w", resource.Type, resource.ID, permission, err)
	}
	return ids, nil
}
