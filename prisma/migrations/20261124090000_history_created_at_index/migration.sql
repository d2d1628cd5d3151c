-- CreateIndex
CREATE INDEX "conversation_history_createdAt_idx" ON "conversation_history"("createdAt");
