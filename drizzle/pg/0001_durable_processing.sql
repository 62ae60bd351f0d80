CREATE TABLE "refused_uploads" (
	"id" text PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"code" text NOT NULL,
	"status" integer NOT NULL,
	"message" text NOT NULL,
	"expires_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "upload_token_uses" (
	"jti" text PRIMARY KEY NOT NULL,
	"uses" integer NOT NULL,
	"expires_at" bigint NOT NULL
);
--> statement-breakpoint
ALTER TABLE "files" ADD COLUMN "upload_length" bigint;--> statement-breakpoint
ALTER TABLE "files" ADD COLUMN "committed_at" bigint;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "user_id" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "jobs" ADD COLUMN "payload" text;--> statement-breakpoint
CREATE INDEX "jobs_file" ON "jobs" USING btree ("file_id");