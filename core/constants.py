"""Column, entity and key names shared by simulator, features, training and serving."""

USER_ID = "user_id"
POST_ID = "post_id"
AUTHOR_ID = "author_id"
TOPIC = "topic"
EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
REQUEST_ID = "request_id"
POSITION = "position"
LABEL = "label"

# Interaction kinds, in the order of their value to the ranking objective.
LIKE = "like"
COMMENT = "comment"
SAVE = "save"
ENGAGEMENT_KINDS = (LIKE, COMMENT, SAVE)
# Graded relevance used by the LambdaRank objective: 0 nothing, 1 like, 2 comment, 3 save.
RELEVANCE = {LIKE: 1, COMMENT: 2, SAVE: 3}
