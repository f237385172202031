package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/agentvoicebox/avb/apierror"
	"github.com/agentvoicebox/avb/store"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/vad"
)

// Defaults of a session configuration.
var (
	defaultInput  = audio.Format{Encoding: audio.PCM16, SampleRate: 16000}
	defaultOutput = audio.Format{Encoding: audio.PCM16, SampleRate: 24000}
)

func audioFormat(f *avbv1.AudioFormat, def audio.Format) audio.Format {
	if f == nil || f.GetEncoding() == avbv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		return def
	}
	out := audio.Format{SampleRate: int(f.GetSampleRate())}
	switch f.GetEncoding() {
	case avbv1.AudioEncoding_AUDIO_ENCODING_PCM16:
		out.Encoding = audio.PCM16
		if out.SampleRate == 0 {
			out.SampleRate = def.SampleRate
		}
	case avbv1.AudioEncoding_AUDIO_ENCODING_MULAW:
		out.Encoding = audio.MuLaw
	case avbv1.AudioEncoding_AUDIO_ENCODING_ALAW:
		out.Encoding = audio.ALaw
	}
	if out.Encoding != audio.PCM16 && out.SampleRate == 0 {
		out.SampleRate = 8000
	}
	return out
}

// idleTimeout is a session's idle timeout (0: the server's default).
func idleTimeout(pc *avbv1.SessionConfig) time.Duration {
	return time.Duration(pc.GetTurnDetection().GetIdleTimeoutSeconds()) * time.Second
}

// callConfig turns the contract's session configuration into the engine's.
func callConfig(pc *avbv1.SessionConfig) (voice.Config, error) {
	c := voice.Config{
		Input:        audioFormat(pc.GetInputAudioFormat(), defaultInput),
		Output:       audioFormat(pc.GetOutputAudioFormat(), defaultOutput),
		Voice:        pc.GetVoice(),
		Model:        pc.GetModel(),
		Instructions: pc.GetInstructions(),
		Phrases:      pc.GetPhraseHints(),
	}
	if err := c.Input.Validate(); err != nil {
		return c, fmt.Errorf("input_audio_format: %w", err)
	}
	if err := c.Output.Validate(); err != nil {
		return c, fmt.Errorf("output_audio_format: %w", err)
	}
	td := pc.GetTurnDetection()
	if td.GetMode() == avbv1.TurnDetectionMode_TURN_DETECTION_MODE_MANUAL {
		c.Turn = voice.Manual
	}
	c.VAD = vad.Config{Threshold: float64(td.GetThreshold()), PrefixPaddingMS: int(td.GetPrefixPaddingMs()),
		SilenceDurationMS: int(td.GetSilenceDurationMs())}
	c.CreateResponse = td == nil || td.CreateResponse == nil || td.GetCreateResponse()
	c.InterruptResponse = td == nil || td.InterruptResponse == nil || td.GetInterruptResponse()
	c.MinInterruptionMS = int(td.GetMinInterruptionMs())
	c.ResumeFalseInterruption = td.GetResumeFalseInterruption()
	c.PreemptiveGeneration = td.GetPreemptiveGeneration()
	c.Echo = pc.GetMode() == avbv1.SessionMode_SESSION_MODE_ECHO
	return c, nil
}

// callConfig is a session's call configuration with its tools compiled
// (a bad tool is a field violation under config.tools).
func (s *voiceServer) callConfig(pc *avbv1.SessionConfig) (voice.Config, error) {
	c, err := callConfig(pc)
	if err != nil {
		return c, invalidArgument(err.Error())
	}
	if c.Tools, err = compileTools("config.tools", pc.GetTools(), s.Tools.RequireHTTPS, s.Tools.guard()); err != nil {
		return c, err
	}
	c.Filler = pc.GetToolFiller()
	c.FillerDelay = time.Duration(pc.GetToolFillerDelayMs()) * time.Millisecond
	return c, nil
}

// overlay copies every field set in src onto dst; message fields are laid
// over field by field, lists replace lists.
func overlay(dst, src proto.Message) {
	if src == nil || !src.ProtoReflect().IsValid() {
		return
	}
	d := dst.ProtoReflect()
	src.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
			overlay(d.Mutable(fd).Message().Interface(), v.Message().Interface())
		} else {
			d.Set(fd, v)
		}
		return true
	})
}

// layeredConfig builds a new session's configuration: the project's voice
// defaults, then the voice config, then the persona, then the request's own
// config, each set field overriding the layers below.
func layeredConfig(ctx context.Context, db *store.DB, m *avbv1.CreateSessionRequest) (*avbv1.SessionConfig, error) {
	cfg := &avbv1.SessionConfig{}
	project := parseOptionalID(m.GetProjectId())
	load := func(kind store.ResourceKind, field, id string, into proto.Message) error {
		row, err := db.Resources(kind).Get(ctx, *parseOptionalID(id))
		if errors.Is(err, store.ErrNotFound) {
			return apierror.Field(field, "no such "+strings.TrimSuffix(field, "_id"))
		}
		if err != nil {
			return err
		}
		if row.ProjectID != nil && project != nil && *row.ProjectID != *project {
			return apierror.Field(field, "belongs to another project")
		}
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(orEmptyJSON(row.Spec), into)
	}
	if project != nil {
		var p avbv1.Project
		if err := load(store.Projects, "project_id", m.GetProjectId(), &p); err != nil {
			return nil, err
		}
		overlay(cfg, p.GetVoiceDefaults())
	}
	if m.GetVoiceConfigId() != "" {
		var v avbv1.VoiceConfig
		if err := load(store.VoiceConfigs, "voice_config_id", m.GetVoiceConfigId(), &v); err != nil {
			return nil, err
		}
		overlay(cfg, &avbv1.SessionConfig{InputAudioFormat: v.GetInputAudioFormat(), OutputAudioFormat: v.GetOutputAudioFormat(),
			Voice: v.GetVoice(), TurnDetection: v.GetTurnDetection(), PhraseHints: v.GetPhraseHints()})
	}
	if m.GetPersonaId() != "" {
		var p avbv1.Persona
		if err := load(store.Personas, "persona_id", m.GetPersonaId(), &p); err != nil {
			return nil, err
		}
		overlay(cfg, &avbv1.SessionConfig{Instructions: p.GetInstructions(), Voice: p.GetVoice(), Model: p.GetModel(),
			Tools: p.GetTools(), ToolFiller: p.GetToolFiller(), ToolFillerDelayMs: p.GetToolFillerDelayMs()})
	}
	overlay(cfg, m.GetConfig())
	return cfg, nil
}
