// @agentvoicebox/sdk: typed clients of the AgentVoiceBox API.
export { createAvbClient, createAvbTransport, services, type AvbClient, type ClientOptions, type Credential } from "./client.js";
export { AvbError, Code, type FieldViolation } from "./errors.js";
export { startBrowserCall, type BrowserCall, type BrowserCallOptions } from "./voice.js";

export * from "./gen/avb/v1/admin_pb.js";
export * from "./gen/avb/v1/apikey_pb.js";
export * from "./gen/avb/v1/audit_pb.js";
export * from "./gen/avb/v1/billing_pb.js";
export * from "./gen/avb/v1/common_pb.js";
export * from "./gen/avb/v1/event_pb.js";
export * from "./gen/avb/v1/notification_pb.js";
export * from "./gen/avb/v1/persona_pb.js";
export * from "./gen/avb/v1/project_pb.js";
export * from "./gen/avb/v1/role_pb.js";
export * from "./gen/avb/v1/session_pb.js";
export * from "./gen/avb/v1/system_pb.js";
export * from "./gen/avb/v1/tenant_pb.js";
export * from "./gen/avb/v1/theme_pb.js";
export * from "./gen/avb/v1/user_pb.js";
export * from "./gen/avb/v1/voice_pb.js";
export * from "./gen/avb/v1/telephony_pb.js";
export * from "./gen/avb/v1/voiceconfig_pb.js";
export { verifyWebhook, WebhookSignatureError, type VerifyOptions, type WebhookSignatureProblem } from "./webhook.js";
