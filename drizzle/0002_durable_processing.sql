CREATE TABLE `refused_uploads` (
	`id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`code` text NOT NULL,
	`status` integer NOT NULL,
	`message` text NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
ALTER TABLE `files` ADD `upload_length` integer;--> statement-breakpoint
ALTER TABLE `files` ADD `committed_at` integer;--> statement-breakpoint
ALTER TABLE `jobs` ADD `user_id` text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE `jobs` ADD `payload` text;--> statement-breakpoint
CREATE INDEX `jobs_file` ON `jobs` (`file_id`);--> statement-breakpoint
UPDATE `files` SET `committed_at` = `updated_at` WHERE `status` IN ('processing', 'ready', 'failed');--> statement-breakpoint
UPDATE `files` SET `upload_length` = `bytes`;
--> statement-breakpoint
INSERT INTO `jobs` (`file_id`, `user_id`, `type`, `payload`, `state`, `attempts`, `run_after`, `created_at`, `updated_at`) SELECT '', '', 'webhook.deliver', `payload`, 'queued', `attempts`, `next_attempt_at`, `created_at`, `created_at` FROM `webhook_deliveries` WHERE `delivered_at` IS NULL;--> statement-breakpoint
DELETE FROM `webhook_deliveries`;
