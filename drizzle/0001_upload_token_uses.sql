CREATE TABLE `upload_token_uses` (
	`jti` text PRIMARY KEY NOT NULL,
	`uses` integer NOT NULL,
	`expires_at` integer NOT NULL
);
